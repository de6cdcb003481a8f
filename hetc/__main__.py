"""`python -m hetc`: the command line, as the `hetc` script."""

from hetc.driver.cli import main

raise SystemExit(main())

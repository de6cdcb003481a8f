import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The examples (models shared by the demo and the tests) and tests/ helpers.
for path in (os.path.join(ROOT, "examples"), os.path.join(ROOT, "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)

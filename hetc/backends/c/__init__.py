"""What every C-family code generator (x86 and amx C; later CUDA C++ and HLS
C++) shares. `text` is the one way any name, comment, string or number
from a model reaches generated source."""

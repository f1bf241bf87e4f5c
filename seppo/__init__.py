__version__ = "0.1.0"

# Written by hand (nbdev only updates the version line): the old flat module names keep importing (seppo._compat).
from ._compat import install as _install_renamed_modules
_install_renamed_modules()

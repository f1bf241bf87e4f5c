# Written by hand (nbdev only creates this file): `seppo.world` was the scene module in seppo 0.1; its names stay
# importable from the package for one release (see seppo._compat).
from .scene import *  # noqa: F401,F403

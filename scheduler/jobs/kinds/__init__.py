"""One module per job kind; each registers its kind when imported, and this imports them all.

Adding a kind is adding a module here: nothing else names the kinds.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

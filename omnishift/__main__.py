"""``python -m omnishift ...`` = the ``omnishift`` command (``accelerate launch -m omnishift train ...`` needs a module)."""

import sys

from omnishift.cli import main

sys.exit(main())

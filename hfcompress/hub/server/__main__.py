"""``python -m hfcompress.hub.server``: run the hub server."""

import sys

from .app import main

sys.exit(main())

"""``python -m edgeclient run|status|pair|simulate`` (edgeclient/cli/): no Django."""

import sys

from edgeclient.cli import main

if __name__ == "__main__":
    sys.exit(main())

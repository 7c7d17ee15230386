"""``python -m server.console``: the moderators' terminal console (docs/console.md)."""

import sys

from server.console.shell import main

if __name__ == "__main__":
    sys.exit(main())

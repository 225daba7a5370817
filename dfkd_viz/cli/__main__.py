"""``python -m dfkd_viz.cli``: the same as the ``dfkd-viz`` command."""

import sys

from dfkd_viz.cli import main

sys.exit(main())

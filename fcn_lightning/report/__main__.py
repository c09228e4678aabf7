"""``python -m fcn_lightning.report``: see `fcn_lightning.report.cli`."""

import sys

from fcn_lightning.report.cli import main

sys.exit(main())

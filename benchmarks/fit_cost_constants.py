"""Fits the planner's cost constants to measured group times: ``planner.calibration``'s command line.

    python benchmarks/fit_cost_constants.py MEASUREMENTS... --gpu H200 -o planner/constants/NAME.json --report FILE

In and out: as ``python -m planner.calibration --help`` says (fcm bench or fcm tune reports and
the converted models in; the fitted constants and a markdown report out).
"""

import sys

from planner.calibration import main

if __name__ == "__main__":
    sys.exit(main())

import sys

from knnroute.cli import main

sys.exit(main())

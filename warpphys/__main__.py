import sys

from warpphys.cli import main

sys.exit(main())

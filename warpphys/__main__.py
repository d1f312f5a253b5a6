import sys

from warpphys._entry import main

sys.exit(main())

import sys

from learnrec.cli import main

sys.exit(main())

import sys

from minimistral.cli import main

sys.exit(main())

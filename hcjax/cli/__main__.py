import sys

from hcjax.cli.main import main

sys.exit(main())

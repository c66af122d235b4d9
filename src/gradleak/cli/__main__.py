"""`python -m gradleak.cli`: the `gradleak` command."""

import sys

from gradleak.cli.app import main

sys.exit(main())

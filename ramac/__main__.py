"""`python -m ramac ...` (and `torchrun ... -m ramac sweep CONFIG`): the `ramac` command."""

import sys

from .cli import main

sys.exit(main())

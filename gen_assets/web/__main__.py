"""`python -m gen_assets.web [--host H] [--port P]`: the same as `gen-assets serve`."""

import sys

from gen_assets.web.server import main

sys.exit(main())

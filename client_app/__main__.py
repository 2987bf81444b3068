import sys

from client_app.cli import main

sys.exit(main())

import sys

from server_app.main import main

sys.exit(main())

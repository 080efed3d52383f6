import sys

from lambdad.main import main

sys.exit(main())

"""`python -m harness`: the lab's command line."""

from harness.cli import main

raise SystemExit(main())

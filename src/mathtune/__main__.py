"""`python -m mathtune`: the same as the `mathtune` command."""

from .cli import main

raise SystemExit(main())

"""``python -m speechstack.bench``."""

from speechstack.bench import main

raise SystemExit(main())

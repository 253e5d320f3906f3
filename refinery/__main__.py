from refinery.cli import main

raise SystemExit(main())

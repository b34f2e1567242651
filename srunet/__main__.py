from srunet.cli import main

raise SystemExit(main())

from opendps.cli.main import main

main()

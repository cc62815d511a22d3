from responsenet.cli import main

main()

from fanbu.cli import main

main()

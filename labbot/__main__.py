from labbot.cli import main

main()

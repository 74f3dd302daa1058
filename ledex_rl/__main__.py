from ledex_rl.cli import main

main()

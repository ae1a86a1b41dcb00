from midtrain.cli import main

main()

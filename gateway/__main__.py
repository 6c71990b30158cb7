from gateway.cli import main

if __name__ == "__main__":  # worker processes (spawned) import this module without running the CLI
    main()

from .realtime import main

main()

"""python -m deploycmp.cli"""
from deploycmp.cli.entry import main

main()

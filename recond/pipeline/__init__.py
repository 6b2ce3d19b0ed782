"""The reconstruction pipeline, one module per stage; ``runner.Pipeline`` drives them.

Kept free of imports so that light modules (errors, progress, the CLI's status) can be imported
without paying for torch.
"""

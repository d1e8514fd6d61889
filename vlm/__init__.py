import logging

# transformers imports torchao (a dependency: int8 weights) whenever it is installed, and torchao 0.18
# registers its enums with torch's pytree the way torch 2.14 deprecates: two warning lines in every
# process that imports transformers. Every transformers import here goes through this package.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

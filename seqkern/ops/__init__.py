"""torch.library registrations: every op has a fake impl and registered autograd."""
from . import recurrent
from . import pooling

"""Settings shared by every environment, read from the process environment, one module per area
(each imports what it reads from the others, so their order here does not matter).

Every knob a deployment may turn is an environment variable; `.env.example` lists them. A `.env` file
at the project root is read when present (never committed). production.py and test.py start from here.
"""

from .api import *  # noqa: F403
from .core import *  # noqa: F403, I001 - the areas in order: later ones read earlier ones
from .database import *  # noqa: F403
from .environment import *  # noqa: F403
from .operations import *  # noqa: F403
from .pipeline import *  # noqa: F403
from .realtime import *  # noqa: F403
from .records import *  # noqa: F403
from .redis_roles import *  # noqa: F403

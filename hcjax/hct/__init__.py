from hcjax.hct._legacy import *  # noqa: F401,F403  (temporary during the restructuring)
from hcjax.hct._legacy import _Run, _load_data  # noqa: F401

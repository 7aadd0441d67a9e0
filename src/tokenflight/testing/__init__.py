"""Test helpers: a bundled OAuth 2.0 identity provider on loopback, with faults and fixtures.

```python
async with IdentityProvider(profile="auth0") as idp:
    client = idp.add_client("acme", "s3cret", default_audience="https://api.example")
    idp.inject(Fault(status=503), count=2)
    ...  # fetch tokens from idp.token_url, call idp.resource_url
```
"""

from ._fixtures import TEST_CLIENT_ID as TEST_CLIENT_ID
from ._fixtures import running_idp as running_idp
from ._idp import IdentityProvider as IdentityProvider
from ._model import PROFILE_NAMES as PROFILE_NAMES
from ._model import PROFILES as PROFILES
from ._model import Fault as Fault
from ._model import IdPClient as IdPClient
from ._model import Profile as Profile
from ._model import ProfileName as ProfileName
from ._model import TokenRequestRecord as TokenRequestRecord
from ._switch import set_testing as set_testing

__all__ = [
    "Fault",
    "IdPClient",
    "IdentityProvider",
    "PROFILES",
    "PROFILE_NAMES",
    "Profile",
    "ProfileName",
    "TEST_CLIENT_ID",
    "TokenRequestRecord",
    "running_idp",
    "set_testing",
]

"""tokenflight: OAuth 2.0 client-credentials tokens for high-concurrency async Python.

Fetched once per key however many callers ask, shared, refreshed in the background
before they expire, and never written to a log.
"""

from ._admission import Admission as Admission
from ._admission import AdmissionStatistics as AdmissionStatistics
from ._auth import TokenAuth as TokenAuth
from ._client_auth import ClientAuth as ClientAuth
from ._client_auth import ClientSecret as ClientSecret
from ._client_auth import ClientSecretBasic as ClientSecretBasic
from ._client_auth import ClientSecretJWT as ClientSecretJWT
from ._client_auth import ClientSecretPost as ClientSecretPost
from ._client_auth import MutualTLS as MutualTLS
from ._client_auth import PrivateKeyJWT as PrivateKeyJWT
from ._client_auth import SelfSignedMutualTLS as SelfSignedMutualTLS
from ._config import ClientCredentials as ClientCredentials
from ._config import RefreshPolicy as RefreshPolicy
from ._config import RetryPolicy as RetryPolicy
from ._errors import ConfigurationError as ConfigurationError
from ._errors import MalformedTokenResponse as MalformedTokenResponse
from ._errors import ManagerClosedError as ManagerClosedError
from ._errors import TenantResolutionError as TenantResolutionError
from ._errors import TokenEndpointUnavailable as TokenEndpointUnavailable
from ._errors import TokenError as TokenError
from ._errors import TokenRequestRefused as TokenRequestRefused
from ._errors import UnknownTenantError as UnknownTenantError
from ._hooks import CooldownEntered as CooldownEntered
from ._hooks import FetchFinished as FetchFinished
from ._hooks import FetchStarted as FetchStarted
from ._hooks import Instrumentation as Instrumentation
from ._hooks import SlotEvicted as SlotEvicted
from ._manager import TokenManager as TokenManager
from ._slot import SlotKey as SlotKey
from ._stats import KeyStatistics as KeyStatistics
from ._stats import ManagerStatistics as ManagerStatistics
from ._store import TokenStore as TokenStore
from ._sync import SyncTokenAuth as SyncTokenAuth
from ._sync import SyncTokenManager as SyncTokenManager
from ._token import Token as Token

__version__ = "0.1.0"

__all__ = [
    "Admission",
    "AdmissionStatistics",
    "ClientAuth",
    "ClientCredentials",
    "ClientSecret",
    "ClientSecretBasic",
    "ClientSecretJWT",
    "ClientSecretPost",
    "ConfigurationError",
    "CooldownEntered",
    "FetchFinished",
    "FetchStarted",
    "Instrumentation",
    "KeyStatistics",
    "MalformedTokenResponse",
    "ManagerClosedError",
    "ManagerStatistics",
    "MutualTLS",
    "PrivateKeyJWT",
    "RefreshPolicy",
    "RetryPolicy",
    "SelfSignedMutualTLS",
    "SlotEvicted",
    "SlotKey",
    "SyncTokenAuth",
    "SyncTokenManager",
    "TenantResolutionError",
    "Token",
    "TokenAuth",
    "TokenEndpointUnavailable",
    "TokenError",
    "TokenManager",
    "TokenRequestRefused",
    "TokenStore",
    "UnknownTenantError",
]

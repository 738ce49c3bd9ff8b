"""Access control: API keys and the admin token."""

from modelport.governance.keys import (
    NewKey,
    hash_secret,
    load_or_create_admin_token,
    new_api_key,
)
from modelport.governance.secrets import SecretStore

__all__ = ["NewKey", "SecretStore", "hash_secret", "load_or_create_admin_token", "new_api_key"]

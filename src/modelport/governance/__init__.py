"""Access control: API keys and the admin token."""

from modelport.governance.keys import (
    NewKey,
    hash_secret,
    load_or_create_admin_token,
    new_api_key,
)

__all__ = ["NewKey", "hash_secret", "load_or_create_admin_token", "new_api_key"]

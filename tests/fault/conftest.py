"""The receiver and the admin service in-process, as their own suites drive them."""

from tests.admin.conftest import (  # noqa: F401 (fixtures)
    admin,
    admin_app,
    admin_config,
    authed,
    operators,
    restore_log_level,
)
from tests.receiver.conftest import client, receiver_client  # noqa: F401 (fixtures)

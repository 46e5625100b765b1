# The XenAPI module Ansible's XenServer modules import, as Debian ships it: the same XenAPI.py,
# packaged inside python3-os-xenapi. Put this directory on PYTHONPATH.
from os_xenapi.client.XenAPI import *  # noqa: F401,F403

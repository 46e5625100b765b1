"""Drives a Flotilla daemon with Debian's python3-os-xenapi (XenAPI.py over XML-RPC) and prints
what it saw as JSON, with Python type names, for test/integration/python-client.test.ts."""
import json
import sys

from os_xenapi.client import XenAPI

url, password = sys.argv[1], sys.argv[2]
out = {}


def typed(value):
    return {"value": value, "type": type(value).__name__}


session = XenAPI.Session(url)
# Four arguments, as Python clients and XenCenter send them. XenAPI.py then asks the pool for
# its master and that host's API version (pool.get_all, pool.get_master, host.get_API_version_*).
session.xenapi.login_with_password("root", password, "2.3", "flotilla-python-test")
ref = session.handle
out["session"] = ref
out["api_version"] = session.API_version

x = session.xenapi
hosts = x.host.get_all()
out["hosts"] = hosts
host = x.host.get_record(hosts[0])
out["host"] = {
    "uuid": host["uuid"],
    "product_brand": host["software_version"].get("product_brand"),
    "API_version_major": typed(host["API_version_major"]),
    "API_version_minor": typed(host["API_version_minor"]),
    "enabled": typed(host["enabled"]),
    "memory_overhead": typed(host["memory_overhead"]),
}

pools = x.pool.get_all_records()
out["pools"] = {r: {"master": p["master"], "type": type(p).__name__} for r, p in pools.items()}

# Ints go as strings: xmlrpc.client refuses Python ints >= 2^31, and xapi coerces numeric strings.
vm = x.VM.create({
    "name_label": "from-python",
    "name_description": "made by os_xenapi",
    "user_version": "1",
    "is_a_template": False,
    "memory_static_max": str(2 * 1024 ** 3),
    "memory_dynamic_max": str(2 * 1024 ** 3),
    "memory_dynamic_min": str(1024 ** 3),
    "memory_static_min": str(1024 ** 3),
    "VCPUs_max": "2",
    "VCPUs_at_startup": 2,
    "VCPUs_params": {},
    "actions_after_shutdown": "destroy",
    "actions_after_reboot": "restart",
    "actions_after_crash": "restart",
    "PV_bootloader": "",
    "PV_kernel": "",
    "PV_ramdisk": "",
    "PV_args": "",
    "PV_bootloader_args": "",
    "PV_legacy_args": "",
    "HVM_boot_policy": "BIOS order",
    "HVM_boot_params": {"order": "cd"},
    "HVM_shadow_multiplier": 1.0,
    "platform": {},
    "PCI_bus": "",
    "other_config": {"made_by": "python"},
    "recommendations": "",
    "xenstore_data": {},
    "ha_always_run": False,
    "ha_restart_priority": "",
    "tags": ["python"],
    "blocked_operations": {},
    "protection_policy": "OpaqueRef:NULL",
    "is_snapshot_from_vmpp": False,
    "appliance": "OpaqueRef:NULL",
    "start_delay": "0",
    "shutdown_delay": "0",
    "order": "0",
    "suspend_SR": "OpaqueRef:NULL",
    "version": "0",
    "generation_id": "",
    "hardware_platform_version": "0",
    "has_vendor_device": False,
    "reference_label": "",
})
out["vm"] = vm
rec = x.VM.get_record(vm)
out["vm_record"] = {k: typed(rec[k]) for k in (
    "name_label", "power_state", "is_a_template", "is_control_domain", "memory_static_max",
    "VCPUs_max", "VCPUs_at_startup", "user_version", "domid", "HVM_shadow_multiplier",
    "other_config", "tags", "resident_on", "HVM_boot_params")}
out["vm_in_get_all"] = vm in x.VM.get_all()
out["vcpus_max_getter"] = typed(x.VM.get_VCPUs_max(vm))

# A failure surfaces as XenAPI.Failure with the ErrorDescription list.
bad = "OpaqueRef:00000000-dead-beef-0000-000000000000"
try:
    x.VM.get_record(bad)
    out["bad_ref"] = None
except XenAPI.Failure as e:
    out["bad_ref"] = e.details

x.VM.destroy(vm)
out["vm_destroyed"] = vm not in x.VM.get_all()

session.xenapi.session.logout()
out["handle_after_logout"] = session.handle

# The old session ref, sent as is: the raw XML-RPC answer.
raw = getattr(session, "host.get_all")(ref)
out["after_logout_raw"] = raw

# Through XenAPI.py's wrapper: SESSION_INVALID makes it re-login, which it cannot do without a
# remembered login, so it gives up with a Fault.
stale = XenAPI.Session(url)
stale._session = ref
try:
    stale.xenapi.host.get_all()
    out["after_logout_wrapped"] = None
except Exception as e:  # xmlrpc.client.Fault
    out["after_logout_wrapped"] = {"type": type(e).__name__, "faultCode": getattr(e, "faultCode", None), "faultString": getattr(e, "faultString", str(e))}

print(json.dumps(out))

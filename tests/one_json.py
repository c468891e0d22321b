# vm_pool.body_json as oned 6.10 / 7.0 writes it, for the test catalogs and the XML-RPC
# stand-in: VirtualMachine::to_json, Template::to_json, VectorAttribute::to_json,
# History::to_json (src/vm/, src/template/, src/common/Attribute.cc) and one_util::escape_json
# (src/common/NebulaUtil.cc).  Identical in release-6.10.0 and release-7.0.0.
import xml.etree.ElementTree as ET


def escape_json(s):
    """one_util::escape_json (src/common/NebulaUtil.cc, 6.10/7.0): \\ \" \/ \b \f \n \r \t."""
    table = {"\\": "\\\\", '"': '\\"', "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n",
             "\r": "\\r", "\t": "\\t"}
    return '"' + "".join(table.get(c, c) for c in s) + '"'


def template_json(elem):
    """Template::to_json: "NAME": {attributes in name order}, DISK and NIC always arrays, other
    repeated names arrays too, vector attributes objects of escaped strings."""
    items, groups = [], {}
    for c in elem:
        groups.setdefault(c.tag, []).append(c)

    def value(c):
        if len(c):
            return "{" + ",".join('"%s": %s' % (k.tag, escape_json(k.text or "")) for k in c) + "}"
        return escape_json(c.text or "")
    for tag in sorted(groups):
        cs = groups[tag]
        if len(cs) == 1 and tag not in ("DISK", "NIC"):
            items.append('"%s": %s' % (tag, value(cs[0])))
        else:
            items.append('"%s": [ %s]' % (tag, ",".join(value(c) for c in cs)))
    return '"%s": {%s}' % (elem.tag, ",".join(items))


def body_json_of(body):
    """vm_pool.body_json exactly as oned 6.10/7.0 writes it (VirtualMachine::to_json,
    History::to_json): numbers as strings, ID/NAME/... unescaped, last history record only."""
    root = ET.fromstring(body)
    out = '{"VM":{'
    for f in ("ID", "UID", "GID", "UNAME", "GNAME", "NAME", "LAST_POLL", "STATE", "LCM_STATE",
              "PREV_STATE", "PREV_LCM_STATE", "RESCHED", "STIME", "ETIME", "DEPLOY_ID"):
        out += '"%s": "%s",' % (f, root.findtext(f) or "")
    out += template_json(root.find("TEMPLATE")) + "," + template_json(root.find("USER_TEMPLATE"))
    hist = root.find("HISTORY_RECORDS/HISTORY")
    if hist is not None:
        out += ',"HISTORY_RECORDS": { "HISTORY": [{%s}] }' % ",".join(
            '"%s": "%s"' % (c.tag, c.text or "") for c in hist)
    return out + "}}"

"""`edgekeep admin set-password`: set the admin web page's password (stored hashed).
`edgekeep admin unlock`: forget the wrong passwords that make logins wait."""
import getpass

from gateway.config import Config
from gateway.web import auth


def data_dir_of(args):
    return args.data_dir or Config.load(args.config).data_dir


def cmd_set_password(args):
    data_dir = data_dir_of(args)
    if args.password_file:
        with open(args.password_file) as f:
            password = f.read().strip()
    else:
        password = getpass.getpass("new admin password: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the passwords differ")
    auth.set_password(data_dir, password)
    print("admin password set (hash in %s)" % auth.hash_path(data_dir))
    return 0


def cmd_unlock(args):
    # The running gateway reads the counts from this file at every login: no restart needed.
    if auth.unlock(data_dir_of(args)):
        print("login lock cleared: the admin page takes the password again")
    else:
        print("the admin page's login was not locked (no wrong passwords counted)")
    return 0


def add_commands(sub):
    s = sub.add_parser("admin", help="admin web page settings")
    actions = s.add_subparsers(dest="action", required=True)
    a = actions.add_parser("set-password", help="set the admin password (argon2-hashed)")
    add_where(a)
    a.add_argument("--password-file", help="read the password from this file (else a prompt)")
    a.set_defaults(fn=cmd_set_password)
    u = actions.add_parser("unlock", help="let logins in again after too many wrong passwords "
                           "(works while the gateway runs)")
    add_where(u)
    u.set_defaults(fn=cmd_unlock)


def add_where(parser):
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the gateway's TOML config (for its data_dir)")
    where.add_argument("--data-dir")

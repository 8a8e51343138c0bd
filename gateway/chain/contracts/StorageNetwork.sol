// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title EdgeKeep storage network
/// @notice The gateways of the Provider network by their Ed25519 identities (docs/network.md),
/// each owner's network epochs (one Merkle root over its storage agreements per epoch) and
/// the agreements themselves, so a Provider or a third party can check them with the chain
/// alone.
contract StorageNetwork {
    uint8 public constant PROVIDER = 1;
    uint8 public constant KEEPER = 2;

    struct Gateway {
        address account; // the address that registered the identity first; zero: unknown
        uint8 roles; // bit set: PROVIDER | KEEPER
        uint64 registeredAt; // block timestamp of the first registration
        string endpoint; // https://host:port of its peer port
    }

    struct Commit {
        bytes32 root; // RFC 9162 root over the owner's agreement leaves; zero: not committed
        uint32 agreements; // leaves in that tree
        uint64 blockNumber;
        uint64 timestamp;
    }

    /// A storage agreement as the owner commits it: `provider` holds up to `capacity` bytes
    /// of the owner's shares until `termEnd` (Unix seconds).
    struct Agreement {
        bytes32 provider;
        uint64 capacity;
        uint64 termEnd;
    }

    struct Term {
        uint64 capacity;
        uint64 termEnd;
        uint64 sinceEpoch; // the owner's epoch that recorded it; zero: no agreement
    }

    mapping(bytes32 => Gateway) private _gateways;
    mapping(bytes32 => mapping(uint64 => Commit)) private _commits;
    mapping(bytes32 => uint64) private _latest;
    mapping(bytes32 => mapping(bytes32 => Term)) private _agreements;

    event GatewayRegistered(bytes32 indexed identity, address indexed account, uint8 roles, string endpoint, bytes signature);
    event Committed(bytes32 indexed owner, uint64 indexed epoch, bytes32 root, uint32 agreements);
    event AgreementRecorded(bytes32 indexed owner, bytes32 indexed provider, uint64 capacity, uint64 termEnd, uint64 epoch);

    error NotIdentityOwner(bytes32 identity, address caller);
    error UnknownRoles(uint8 roles);
    error ZeroRoot();
    error EpochOutOfOrder(bytes32 owner, uint64 epoch, uint64 expected);
    error EpochConflict(bytes32 owner, uint64 epoch, bytes32 committedRoot, uint32 committedAgreements);

    /// @notice Register an identity, or update its roles and endpoint. The first registration
    /// binds the identity to the sender; only that address may update it. `signature` is the
    /// identity's Ed25519 signature over (chain id, this contract, sender): Ed25519 is not in
    /// this EVM, so it is only emitted, for anyone to check off chain.
    function register(bytes32 identity, uint8 roles, string calldata endpoint, bytes calldata signature) external {
        if (roles & ~(PROVIDER | KEEPER) != 0) revert UnknownRoles(roles);
        Gateway storage g = _gateways[identity];
        if (g.account == address(0)) {
            g.account = msg.sender;
            g.registeredAt = uint64(block.timestamp);
        } else if (g.account != msg.sender) {
            revert NotIdentityOwner(identity, msg.sender);
        }
        g.roles = roles;
        g.endpoint = endpoint;
        emit GatewayRegistered(identity, msg.sender, roles, endpoint, signature);
    }

    /// @notice Commit the owner's next network epoch (the first is 1), with the agreements
    /// that are new or changed since the previous one. Sending a committed epoch again with
    /// the same root and count is a no-op, so a gateway may retry after a crash; anything
    /// else for a committed epoch reverts. Storage per epoch is one Commit whatever the data.
    function commit(bytes32 owner, uint64 epoch, bytes32 root, uint32 agreements, Agreement[] calldata changed)
        external
    {
        if (_gateways[owner].account != msg.sender) revert NotIdentityOwner(owner, msg.sender);
        if (root == bytes32(0)) revert ZeroRoot();
        uint64 latest = _latest[owner];
        if (epoch != 0 && epoch <= latest) {
            Commit storage c = _commits[owner][epoch];
            if (c.root == root && c.agreements == agreements) return;
            revert EpochConflict(owner, epoch, c.root, c.agreements);
        }
        if (epoch != latest + 1) revert EpochOutOfOrder(owner, epoch, latest + 1);
        _latest[owner] = epoch;
        _commits[owner][epoch] = Commit(root, agreements, uint64(block.number), uint64(block.timestamp));
        for (uint256 i = 0; i < changed.length; i++) {
            Agreement calldata a = changed[i];
            _agreements[owner][a.provider] = Term(a.capacity, a.termEnd, epoch);
            emit AgreementRecorded(owner, a.provider, a.capacity, a.termEnd, epoch);
        }
        emit Committed(owner, epoch, root, agreements);
    }

    /// @return account zero (and the rest empty) when the identity was never registered
    function gatewayOf(bytes32 identity)
        external
        view
        returns (address account, uint8 roles, string memory endpoint, uint64 registeredAt)
    {
        Gateway storage g = _gateways[identity];
        return (g.account, g.roles, g.endpoint, g.registeredAt);
    }

    /// @return root zero when the owner has not committed that epoch
    function commitOf(bytes32 owner, uint64 epoch)
        external
        view
        returns (bytes32 root, uint32 agreements, uint64 blockNumber, uint64 timestamp)
    {
        Commit storage c = _commits[owner][epoch];
        return (c.root, c.agreements, c.blockNumber, c.timestamp);
    }

    /// @return the owner's last committed epoch, 0 before its first commit
    function latestEpoch(bytes32 owner) external view returns (uint64) {
        return _latest[owner];
    }

    /// @notice The owner's last recorded agreement with the provider; sinceEpoch is zero when
    /// it never recorded one.
    function agreementOf(bytes32 owner, bytes32 provider)
        external
        view
        returns (uint64 capacity, uint64 termEnd, uint64 sinceEpoch)
    {
        Term storage t = _agreements[owner][provider];
        return (t.capacity, t.termEnd, t.sinceEpoch);
    }
}

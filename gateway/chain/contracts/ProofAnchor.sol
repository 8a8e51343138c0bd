// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title EdgeKeep proof anchor
/// @notice One Merkle root per epoch, over everything the gateway stored in that epoch.
/// Trees and inclusion proofs follow RFC 9162 (Certificate Transparency v2) with SHA-256:
/// leaf hash = sha256(0x00 || leaf), node hash = sha256(0x01 || left || right).
contract ProofAnchor {
    struct Anchor {
        bytes32 root; // zero means the epoch is not anchored
        uint32 count; // number of leaves in the tree
        uint64 blockNumber;
        uint64 timestamp;
    }

    address public immutable admin;
    mapping(address => bool) public isAnchorer;
    mapping(uint64 => Anchor) private _anchors;

    event Anchored(uint64 indexed epoch, bytes32 root, uint32 count);
    event AnchorerAdded(address indexed anchorer);
    event AnchorerRemoved(address indexed anchorer);

    error NotAdmin(address caller);
    error NotAnchorer(address caller);
    error ZeroRoot();
    error EpochConflict(uint64 epoch, bytes32 anchoredRoot, uint32 anchoredCount);

    constructor() {
        admin = msg.sender;
        isAnchorer[msg.sender] = true;
        emit AnchorerAdded(msg.sender);
    }

    function addAnchorer(address anchorer) external {
        if (msg.sender != admin) revert NotAdmin(msg.sender);
        isAnchorer[anchorer] = true;
        emit AnchorerAdded(anchorer);
    }

    function removeAnchorer(address anchorer) external {
        if (msg.sender != admin) revert NotAdmin(msg.sender);
        isAnchorer[anchorer] = false;
        emit AnchorerRemoved(anchorer);
    }

    /// @notice Anchor an epoch once. Sending the same (root, count) again is a no-op, so a
    /// gateway may retry from its outbox without knowing whether the first send was mined.
    function anchor(uint64 epoch, bytes32 root, uint32 count) external {
        if (!isAnchorer[msg.sender]) revert NotAnchorer(msg.sender);
        if (root == bytes32(0)) revert ZeroRoot();
        Anchor storage a = _anchors[epoch];
        if (a.root != bytes32(0)) {
            if (a.root == root && a.count == count) return;
            revert EpochConflict(epoch, a.root, a.count);
        }
        _anchors[epoch] = Anchor(root, count, uint64(block.number), uint64(block.timestamp));
        emit Anchored(epoch, root, count);
    }

    function anchorOf(uint64 epoch)
        external
        view
        returns (bytes32 root, uint32 count, uint64 blockNumber, uint64 timestamp)
    {
        Anchor storage a = _anchors[epoch];
        return (a.root, a.count, a.blockNumber, a.timestamp);
    }

    /// @notice True when `leaf` (a raw 32-byte digest) is entry `index` of the anchored tree
    /// of `epoch`. `size` must equal the anchored leaf count.
    function verifyAnchored(uint64 epoch, bytes32 leaf, uint256 index, uint256 size, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        Anchor storage a = _anchors[epoch];
        if (a.root == bytes32(0) || size != a.count) return false;
        return verifyInclusion(a.root, leaf, index, size, proof);
    }

    /// @notice RFC 9162 section 2.1.3.2: verify an inclusion proof of entry `index` in a
    /// tree of `size` leaves with root `root`.
    function verifyInclusion(bytes32 root, bytes32 leaf, uint256 index, uint256 size, bytes32[] calldata proof)
        public
        pure
        returns (bool)
    {
        if (index >= size) return false;
        uint256 fn = index;
        uint256 sn = size - 1;
        bytes32 r = sha256(abi.encodePacked(bytes1(0x00), leaf));
        for (uint256 i = 0; i < proof.length; i++) {
            if (sn == 0) return false;
            if ((fn & 1) == 1 || fn == sn) {
                r = sha256(abi.encodePacked(bytes1(0x01), proof[i], r));
                while ((fn & 1) == 0 && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            } else {
                r = sha256(abi.encodePacked(bytes1(0x01), r, proof[i]));
            }
            fn >>= 1;
            sn >>= 1;
        }
        return sn == 0 && r == root;
    }
}

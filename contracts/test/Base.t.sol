// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {vm} from "./Vm.sol";
import {PaymentChannels} from "../PaymentChannels.sol";
import {TestStablecoin} from "./mocks/Tokens.sol";

/// @notice EIP-712 signing built only from PROTOCOL.md (not from the contract's own hashing), so a
/// mismatch between the contract and the protocol fails the tests.
library Sig {
    uint256 internal constant N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant VOUCHER = keccak256("Voucher(bytes32 channelId,uint256 cumulativeAmount)");
    bytes32 internal constant RECEIPT =
        keccak256("Receipt(bytes32 channelId,uint256 cumulativeAmount,uint256 amount,bytes32 taskId)");
    bytes32 internal constant CLOSE_CONSENT =
        keccak256("CloseConsent(bytes32 channelId,uint256 cumulativeAmount,uint64 deadline)");
    bytes32 internal constant CLOSE_REQUEST = keccak256("CloseRequest(bytes32 channelId,uint256 cumulativeAmount)");
    bytes32 internal constant ACCESS = keccak256("Access(bytes32 channelId,uint64 expires)");

    function domain(uint256 chainId, address verifyingContract) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("PaymentChannels"), keccak256("2"), chainId, verifyingContract)
        );
    }

    function typed(bytes32 structHash, uint256 chainId, address verifyingContract) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(hex"1901", domain(chainId, verifyingContract), structHash));
    }

    /// @dev Digest of a two-field (bytes32 channelId, uint256 x) type: Voucher, CloseRequest, Access.
    function digest(bytes32 typehash, bytes32 id, uint256 x, uint256 chainId, address verifyingContract)
        internal
        pure
        returns (bytes32)
    {
        return typed(keccak256(abi.encode(typehash, id, x)), chainId, verifyingContract);
    }

    function consentDigest(bytes32 id, uint256 amount, uint64 deadline, uint256 chainId, address verifyingContract)
        internal
        pure
        returns (bytes32)
    {
        return typed(keccak256(abi.encode(CLOSE_CONSENT, id, amount, deadline)), chainId, verifyingContract);
    }

    function sign(uint256 key, bytes32 h) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, h);
        return abi.encodePacked(r, s, v);
    }

    /// @dev The same signature in its malleable high-s form (valid for raw ecrecover).
    function highS(uint256 key, bytes32 h) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, h);
        return abi.encodePacked(r, bytes32(N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
    }
}

/// @notice Shared fixture: a PaymentChannels, a 6-decimal stablecoin, a payer, its voucher signer,
/// a payee and a stranger, with keys.
abstract contract Base {
    PaymentChannels internal pc;
    TestStablecoin internal usd;

    uint256 internal constant PAYER_KEY = 0xA11CE;
    uint256 internal constant SIGNER_KEY = 0x5161E5; // the payer's voucher signer (a browser key)
    uint256 internal constant PAYEE_KEY = 0xB0B;
    uint256 internal constant OTHER_KEY = 0xC0FFEE;
    address internal payer;
    address internal signer;
    address internal payee;
    address internal other;
    address internal constant NO_SIGNER = address(0);
    uint64 internal constant CP = 1 days;
    uint256 internal saltCounter;

    function setUp() public virtual {
        pc = new PaymentChannels();
        usd = new TestStablecoin();
        payer = vm.addr(PAYER_KEY);
        signer = vm.addr(SIGNER_KEY);
        payee = vm.addr(PAYEE_KEY);
        other = vm.addr(OTHER_KEY);
        vm.deal(payer, 1_000_000 ether);
        vm.deal(other, 1_000_000 ether);
        vm.deal(address(this), 1_000_000 ether);
        usd.mint(payer, 1e30);
        usd.mint(other, 1e30);
        vm.prank(payer);
        usd.approve(address(pc), type(uint256).max);
        vm.prank(other);
        usd.approve(address(pc), type(uint256).max);
        vm.warp(1_700_000_000);
    }

    function _salt() internal returns (bytes32) {
        return bytes32(++saltCounter);
    }

    function _openEth(uint256 amount) internal returns (bytes32 id) {
        vm.prank(payer);
        id = pc.open{value: amount}(payee, address(0), amount, CP, _salt(), NO_SIGNER);
    }

    function _openUsd(uint256 amount) internal returns (bytes32 id) {
        vm.prank(payer);
        id = pc.open(payee, address(usd), amount, CP, _salt(), NO_SIGNER);
    }

    /// @dev A channel whose vouchers the voucher signer may sign (ETH or the stablecoin).
    function _openWithSigner(uint256 amount, bool token) internal returns (bytes32 id) {
        vm.prank(payer);
        id = pc.open{value: token ? 0 : amount}(payee, token ? address(usd) : address(0), amount, CP, _salt(), signer);
    }

    function _voucher(bytes32 id, uint256 amount) internal view returns (bytes memory) {
        return _voucherBy(PAYER_KEY, id, amount);
    }

    function _signerVoucher(bytes32 id, uint256 amount) internal view returns (bytes memory) {
        return _voucherBy(SIGNER_KEY, id, amount);
    }

    function _voucherBy(uint256 key, bytes32 id, uint256 amount) internal view returns (bytes memory) {
        return Sig.sign(key, Sig.digest(Sig.VOUCHER, id, amount, block.chainid, address(pc)));
    }

    /// @dev The payee's consent with a deadline one hour ahead of the current block.
    function _consent(bytes32 id, uint256 amount) internal view returns (bytes memory) {
        return _consentUntil(id, amount, _deadline());
    }

    function _consentUntil(bytes32 id, uint256 amount, uint64 deadline) internal view returns (bytes memory) {
        return Sig.sign(PAYEE_KEY, Sig.consentDigest(id, amount, deadline, block.chainid, address(pc)));
    }

    function _deadline() internal view returns (uint64) {
        return uint64(block.timestamp + 1 hours);
    }

    function _assertEq(uint256 a, uint256 b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": ", _str(a), " != ", _str(b)));
    }

    function _assertTrue(bool ok, string memory what) internal pure {
        if (!ok) revert(what);
    }

    function _str(uint256 x) internal pure returns (string memory) {
        if (x == 0) return "0";
        bytes memory b = new bytes(78);
        uint256 i = 78;
        while (x != 0) {
            b[--i] = bytes1(uint8(48 + (x % 10)));
            x /= 10;
        }
        bytes memory out = new bytes(78 - i);
        for (uint256 j; j < out.length; ++j) out[j] = b[i + j];
        return string(out);
    }
}

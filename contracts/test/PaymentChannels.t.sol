// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {vm} from "./Vm.sol";
import {Base, Sig} from "./Base.t.sol";
import {PaymentChannels} from "../PaymentChannels.sol";
import {
    TestStablecoin,
    FeeToken,
    NoReturnToken,
    FalseReturnToken,
    ReentrantToken
} from "./mocks/Tokens.sol";
import {RevertingReceiver} from "./mocks/Actors.sol";

/// @notice Unit tests: every function's happy path and every revert path, by custom error.
contract PaymentChannelsTest is Base {
    bytes32 internal constant ZERO = bytes32(0);
    uint256 internal originalChainId;

    // ------------------------------------------------------------------ open

    function test_open_eth_storesChannelAndEmits() public {
        bytes32 expected = keccak256(abi.encode(payer, payee, address(0), bytes32(uint256(7))));
        _assertTrue(pc.channelId(payer, payee, address(0), bytes32(uint256(7))) == expected, "channelId");
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.ChannelOpened(expected, payer, payee, address(0), 1 ether, CP, NO_SIGNER);
        vm.prank(payer);
        bytes32 id = pc.open{value: 1 ether}(payee, address(0), 1 ether, CP, bytes32(uint256(7)), NO_SIGNER);
        _assertTrue(id == expected, "returned id");
        PaymentChannels.Channel memory c = pc.getChannel(id);
        _assertTrue(c.payer == payer && c.payee == payee && c.token == address(0), "parties");
        _assertEq(c.deposit, 1 ether, "deposit");
        _assertEq(c.claimed, 0, "claimed");
        _assertEq(c.challengePeriod, CP, "cp");
        _assertEq(c.closesAt, 0, "closesAt");
        _assertTrue(c.status == PaymentChannels.Status.Open, "status");
        _assertEq(address(pc).balance, 1 ether, "held");
    }

    function test_open_erc20_pullsTokens() public {
        uint256 before = usd.balanceOf(payer);
        bytes32 id = _openUsd(5e6);
        PaymentChannels.Channel memory c = pc.getChannel(id);
        _assertTrue(c.token == address(usd), "token");
        _assertEq(c.deposit, 5e6, "deposit");
        _assertEq(usd.balanceOf(address(pc)), 5e6, "held");
        _assertEq(before - usd.balanceOf(payer), 5e6, "pulled");
    }

    function test_open_maxChallengePeriodAndMaxDeposit() public {
        uint256 max = pc.MAX_DEPOSIT();
        vm.deal(payer, max);
        vm.prank(payer);
        bytes32 id = pc.open{value: max}(payee, address(0), max, 30 days, _salt(), NO_SIGNER);
        _assertEq(pc.getChannel(id).deposit, max, "deposit");
        _assertEq(pc.getChannel(id).challengePeriod, 30 days, "cp");
    }

    function test_open_revert_channelIdUsed() public {
        vm.startPrank(payer);
        bytes32 id = pc.open{value: 1}(payee, address(0), 1, CP, ZERO, NO_SIGNER);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelIdUsed.selector, id));
        pc.open{value: 1}(payee, address(0), 1, CP, ZERO, NO_SIGNER);
        vm.stopPrank();
    }

    function test_open_revert_channelIdUsedAfterClose() public {
        vm.prank(payer);
        bytes32 id = pc.open{value: 1 ether}(payee, address(0), 1 ether, CP, ZERO, NO_SIGNER);
        vm.prank(payee);
        pc.closeByPayee(id, 0, "");
        _assertTrue(pc.getChannel(id).status == PaymentChannels.Status.Closed, "closed");
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelIdUsed.selector, id));
        pc.open{value: 1 ether}(payee, address(0), 1 ether, CP, ZERO, NO_SIGNER);
    }

    function test_open_revert_invalidPayee() public {
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.InvalidPayee.selector, address(0)));
        pc.open{value: 1}(address(0), address(0), 1, CP, ZERO, NO_SIGNER);
    }

    function test_open_revert_invalidChallengePeriod() public {
        uint64[2] memory bad = [uint64(0), uint64(30 days + 1)];
        for (uint256 i; i < bad.length; ++i) {
            vm.prank(payer);
            vm.expectRevert(
                abi.encodeWithSelector(PaymentChannels.InvalidChallengePeriod.selector, bad[i], uint64(30 days))
            );
            pc.open{value: 1}(payee, address(0), 1, bad[i], ZERO, NO_SIGNER);
        }
    }

    function test_open_revert_zeroAmount() public {
        vm.prank(payer);
        vm.expectRevert(PaymentChannels.ZeroAmount.selector);
        pc.open(payee, address(0), 0, CP, ZERO, NO_SIGNER);
    }

    function test_open_revert_depositTooLarge() public {
        uint256 big = uint256(type(uint96).max) + 1;
        vm.deal(payer, big);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.DepositTooLarge.selector, big, uint256(type(uint96).max)));
        pc.open{value: big}(payee, address(0), big, CP, ZERO, NO_SIGNER);
    }

    function test_open_revert_wrongEthAmount() public {
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.WrongEthAmount.selector, 1, 2));
        pc.open{value: 1}(payee, address(0), 2, CP, ZERO, NO_SIGNER);
    }

    function test_open_revert_ethNotAcceptedForToken() public {
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.EthNotAccepted.selector, 1));
        pc.open{value: 1}(payee, address(usd), 10, CP, ZERO, NO_SIGNER);
    }

    function test_open_revert_feeOnTransferToken() public {
        FeeToken fee = new FeeToken();
        fee.mint(payer, 1000);
        vm.startPrank(payer);
        fee.approve(address(pc), 1000);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.FeeOnTransferToken.selector, address(fee), 1000, 990));
        pc.open(payee, address(fee), 1000, CP, ZERO, NO_SIGNER);
        vm.stopPrank();
    }

    function test_open_revert_invalidTokenWithoutCode() public {
        address notAToken = address(0xdead);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.InvalidToken.selector, notAToken));
        pc.open(payee, notAToken, 10, CP, ZERO, NO_SIGNER);
    }

    function test_open_revert_insufficientAllowance() public {
        vm.prank(payee); // payee has no tokens and no allowance
        vm.expectRevert();
        pc.open(payer, address(usd), 10, CP, ZERO, NO_SIGNER);
    }

    function test_open_revert_tokenReturningFalse() public {
        FalseReturnToken t = new FalseReturnToken();
        t.mint(payer, 100);
        // no allowance: transferFrom returns false, SafeERC20 turns it into a revert
        vm.prank(payer);
        vm.expectPartialRevert(bytes4(keccak256("SafeERC20FailedOperation(address)")));
        pc.open(payee, address(t), 100, CP, ZERO, NO_SIGNER);
    }

    function test_noReturnToken_openClaimClose() public {
        NoReturnToken t = new NoReturnToken();
        t.mint(payer, 1000);
        vm.prank(payer);
        t.approve(address(pc), 1000);
        vm.prank(payer);
        bytes32 id = pc.open(payee, address(t), 1000, CP, ZERO, NO_SIGNER);
        pc.claim(id, 300, _voucher(id, 300));
        _assertEq(t.balanceOf(payee), 300, "claimed");
        vm.prank(payee);
        pc.closeByPayee(id, 400, _voucher(id, 400));
        _assertEq(t.balanceOf(payee), 400, "payee total");
        _assertEq(t.balanceOf(payer), 600, "refund");
        _assertEq(t.balanceOf(address(pc)), 0, "empty");
    }

    // ------------------------------------------------------------------ openWithPermit

    function _permitSig(uint256 key, address token, uint256 value, uint256 deadline)
        internal
        view
        returns (uint8 v, bytes32 r, bytes32 s)
    {
        address owner = vm.addr(key);
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"),
                owner,
                address(pc),
                value,
                TestStablecoin(token).nonces(owner),
                deadline
            )
        );
        (v, r, s) = vm.sign(key, keccak256(abi.encodePacked(hex"1901", TestStablecoin(token).DOMAIN_SEPARATOR(), structHash)));
    }

    function test_openWithPermit_oneTransaction() public {
        uint256 key = 0x5EED;
        address p = vm.addr(key);
        usd.mint(p, 1e6);
        (uint8 v, bytes32 r, bytes32 s) = _permitSig(key, address(usd), 1e6, block.timestamp + 1 hours);
        vm.prank(p);
        bytes32 id = pc.openWithPermit(payee, address(usd), 1e6, CP, ZERO, NO_SIGNER, block.timestamp + 1 hours, v, r, s);
        _assertTrue(id == pc.channelId(p, payee, address(usd), ZERO), "id");
        _assertEq(pc.getChannel(id).deposit, 1e6, "deposit");
        _assertEq(usd.balanceOf(address(pc)), 1e6, "held");
    }

    function test_openWithPermit_frontRunPermitStillOpens() public {
        uint256 key = 0x5EED;
        address p = vm.addr(key);
        usd.mint(p, 1e6);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permitSig(key, address(usd), 1e6, deadline);
        // an observer submits the permit first: the nonce is used, the allowance is in place
        vm.prank(other);
        usd.permit(p, address(pc), 1e6, deadline, v, r, s);
        vm.prank(p);
        bytes32 id = pc.openWithPermit(payee, address(usd), 1e6, CP, ZERO, NO_SIGNER, deadline, v, r, s);
        _assertEq(pc.getChannel(id).deposit, 1e6, "deposit");
    }

    function test_openWithPermit_revert_badPermitNoAllowance() public {
        uint256 key = 0x5EED;
        address p = vm.addr(key);
        usd.mint(p, 1e6);
        (uint8 v, bytes32 r, bytes32 s) = _permitSig(key, address(usd), 1e6, block.timestamp + 1 hours);
        vm.prank(p);
        vm.expectPartialRevert(bytes4(keccak256("ERC20InsufficientAllowance(address,uint256,uint256)")));
        pc.openWithPermit(payee, address(usd), 1e6, CP, ZERO, NO_SIGNER, block.timestamp + 1 hours, v ^ 1, r, s);
    }

    function test_openWithPermit_revert_ethToken() public {
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.EthNotAccepted.selector, 0));
        pc.openWithPermit(payee, address(0), 1, CP, ZERO, NO_SIGNER, 0, 27, ZERO, ZERO);
    }

    // ------------------------------------------------------------------ topUp

    function test_topUp_ethByAnyone() public {
        bytes32 id = _openEth(1 ether);
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.ChannelToppedUp(id, 2 ether, 3 ether);
        vm.prank(other);
        pc.topUp{value: 2 ether}(id, 2 ether);
        _assertEq(pc.getChannel(id).deposit, 3 ether, "deposit");
        _assertEq(address(pc).balance, 3 ether, "held");
    }

    function test_topUp_erc20() public {
        bytes32 id = _openUsd(1e6);
        vm.prank(payer);
        pc.topUp(id, 2e6);
        _assertEq(pc.getChannel(id).deposit, 3e6, "deposit");
        _assertEq(usd.balanceOf(address(pc)), 3e6, "held");
    }

    function test_topUp_revert_closing() public {
        bytes32 id = _openEth(1 ether);
        vm.prank(payer);
        pc.startClose(id);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelClosing.selector, id, uint64(block.timestamp + CP)));
        pc.topUp{value: 1}(id, 1);
    }

    function test_topUp_revert_notOpen() public {
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelNotOpen.selector, ZERO, PaymentChannels.Status.None));
        pc.topUp{value: 1}(ZERO, 1);
        bytes32 id = _openEth(1 ether);
        vm.prank(payee);
        pc.closeByPayee(id, 0, "");
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelNotOpen.selector, id, PaymentChannels.Status.Closed));
        pc.topUp{value: 1}(id, 1);
    }

    function test_topUp_revert_amounts() public {
        bytes32 id = _openEth(1 ether);
        vm.expectRevert(PaymentChannels.ZeroAmount.selector);
        pc.topUp(id, 0);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.WrongEthAmount.selector, 1, 2));
        pc.topUp{value: 1}(id, 2);
        uint256 max = type(uint96).max;
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.DepositTooLarge.selector, max + 1, max));
        pc.topUp(id, max + 1 - 1 ether);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.DepositTooLarge.selector, type(uint256).max, max));
        pc.topUp(id, type(uint256).max);
        bytes32 tid = _openUsd(1e6);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.EthNotAccepted.selector, 5));
        pc.topUp{value: 5}(tid, 1);
    }

    // ------------------------------------------------------------------ claim

    function test_claim_paysDifferenceAndStaysOpen() public {
        bytes32 id = _openEth(1 ether);
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.Claimed(id, 0.3 ether, 0.3 ether);
        pc.claim(id, 0.3 ether, _voucher(id, 0.3 ether)); // anyone may submit
        _assertEq(payee.balance, 0.3 ether, "first");
        vm.prank(payee);
        pc.claim(id, 0.5 ether, _voucher(id, 0.5 ether));
        _assertEq(payee.balance, 0.5 ether, "second");
        PaymentChannels.Channel memory c = pc.getChannel(id);
        _assertEq(c.claimed, 0.5 ether, "claimed");
        _assertTrue(c.status == PaymentChannels.Status.Open, "open");
        _assertEq(address(pc).balance, 0.5 ether, "held");
    }

    function test_claim_cappedAtDepositThenMoreAfterTopUp() public {
        bytes32 id = _openUsd(100);
        bytes memory v = _voucher(id, 250);
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.Claimed(id, 100, 100);
        pc.claim(id, 250, v);
        _assertEq(usd.balanceOf(payee), 100, "capped");
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.NothingToClaim.selector, id, 250, 100));
        pc.claim(id, 250, v);
        vm.prank(payer);
        pc.topUp(id, 500);
        pc.claim(id, 250, v);
        _assertEq(usd.balanceOf(payee), 250, "after top-up");
    }

    function test_claim_revert_nothingToClaim() public {
        bytes32 id = _openEth(1 ether);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.NothingToClaim.selector, id, 0, 0));
        pc.claim(id, 0, _voucher(id, 0));
        pc.claim(id, 10, _voucher(id, 10));
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.NothingToClaim.selector, id, 10, 10));
        pc.claim(id, 10, _voucher(id, 10));
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.NothingToClaim.selector, id, 9, 10));
        pc.claim(id, 9, _voucher(id, 9));
    }

    function test_claim_revert_invalidSignatures() public {
        bytes32 id = _openEth(1 ether);
        bytes32 id2 = _openEth(1 ether);
        bytes32 h = Sig.digest(Sig.VOUCHER, id, 100, block.chainid, address(pc));
        bytes[7] memory bad = [
            Sig.sign(OTHER_KEY, h), // not the payer
            Sig.sign(PAYER_KEY, Sig.digest(Sig.VOUCHER, id, 99, block.chainid, address(pc))), // other amount
            Sig.sign(PAYER_KEY, Sig.digest(Sig.VOUCHER, id, 100, block.chainid + 1, address(pc))), // other chain
            Sig.sign(PAYER_KEY, Sig.digest(Sig.VOUCHER, id, 100, block.chainid, address(0xBEEF))), // other contract
            Sig.sign(PAYER_KEY, Sig.digest(Sig.VOUCHER, id2, 100, block.chainid, address(pc))), // other channel
            Sig.sign(PAYER_KEY, Sig.digest(Sig.CLOSE_REQUEST, id, 100, block.chainid, address(pc))), // other type
            Sig.highS(PAYER_KEY, h) // malleated high-s twin of a valid signature
        ];
        for (uint256 i; i < bad.length; ++i) {
            vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
            pc.claim(id, 100, bad[i]);
        }
        bytes memory good = Sig.sign(PAYER_KEY, h);
        bytes memory short = new bytes(64);
        for (uint256 i; i < 64; ++i) short[i] = good[i];
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.InvalidSignature.selector, id, payer, address(0)));
        pc.claim(id, 100, short);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.InvalidSignature.selector, id, payer, address(0)));
        pc.claim(id, 100, "");
        pc.claim(id, 100, good);
        _assertEq(payee.balance, 100, "good one pays");
    }

    function test_claim_voucherFromOtherChainIdNeverPays() public {
        bytes32 id = _openEth(1 ether);
        bytes memory v = _voucher(id, 100);
        // kept in storage: via-IR may re-read block.chainid instead of keeping a local copy
        originalChainId = block.chainid;
        vm.chainId(originalChainId + 1);
        // the contract recomputes its domain separator for the new chain id
        vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
        pc.claim(id, 100, v);
        vm.chainId(originalChainId);
        pc.claim(id, 100, v);
        _assertEq(payee.balance, 100, "pays on its own chain");
    }

    function test_claim_revert_channelNotOpen() public {
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelNotOpen.selector, ZERO, PaymentChannels.Status.None));
        pc.claim(ZERO, 1, "");
        bytes32 id = _openEth(1 ether);
        vm.prank(payee);
        pc.closeByPayee(id, 0, "");
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelNotOpen.selector, id, PaymentChannels.Status.Closed));
        pc.claim(id, 1, _voucher(id, 1));
    }

    function test_claim_whileClosingUntilClosesAt() public {
        bytes32 id = _openEth(1 ether);
        vm.prank(payer);
        pc.startClose(id);
        uint64 closesAt = uint64(block.timestamp + CP);
        vm.warp(closesAt - 1);
        pc.claim(id, 10, _voucher(id, 10));
        vm.warp(closesAt);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChallengePeriodOver.selector, id, closesAt));
        pc.claim(id, 20, _voucher(id, 20));
    }

    // ------------------------------------------------------------------ claimMany

    function _claims(bytes32[] memory ids, uint256[] memory amounts) internal view returns (PaymentChannels.Claim[] memory cs) {
        cs = new PaymentChannels.Claim[](ids.length);
        for (uint256 i; i < ids.length; ++i) cs[i] = PaymentChannels.Claim(ids[i], amounts[i], _voucher(ids[i], amounts[i]));
    }

    function test_claimMany_aggregatesAndMixesTokens() public {
        bytes32[] memory ids = new bytes32[](4);
        uint256[] memory amounts = new uint256[](4);
        ids[0] = _openEth(1 ether);
        ids[1] = _openEth(1 ether);
        ids[2] = _openUsd(1e6);
        ids[3] = _openEth(1 ether);
        (amounts[0], amounts[1], amounts[2], amounts[3]) = (100, 200, 300, 400);
        vm.prank(payee);
        pc.claimMany(_claims(ids, amounts));
        _assertEq(payee.balance, 700, "eth");
        _assertEq(usd.balanceOf(payee), 300, "usd");
        for (uint256 i; i < 4; ++i) _assertEq(pc.getChannel(ids[i]).claimed, amounts[i], "claimed");
    }

    function test_claimMany_skipsZeroPayers() public {
        bytes32[] memory ids = new bytes32[](5);
        uint256[] memory amounts = new uint256[](5);
        ids[0] = _openEth(1 ether);
        pc.claim(ids[0], 50, _voucher(ids[0], 50));
        ids[1] = _openEth(1 ether);
        ids[2] = _openEth(1 ether);
        vm.prank(payee);
        pc.closeByPayee(ids[2], 0, "");
        ids[3] = keccak256("never opened");
        ids[4] = ids[1];
        (amounts[0], amounts[1], amounts[2], amounts[3], amounts[4]) = (50, 70, 10, 10, 70);
        PaymentChannels.Claim[] memory cs = _claims(ids, amounts);
        cs[0].payerSignature = hex"00"; // stale entry: skipped without looking at the signature
        vm.prank(payee);
        pc.claimMany(cs);
        _assertEq(payee.balance, 50 + 70, "only entry 1 paid (dup skipped)");
        _assertEq(pc.getChannel(ids[1]).claimed, 70, "claimed");
    }

    function test_claimMany_badSignatureFailsBatch() public {
        bytes32[] memory ids = new bytes32[](2);
        uint256[] memory amounts = new uint256[](2);
        ids[0] = _openEth(1 ether);
        ids[1] = _openEth(1 ether);
        (amounts[0], amounts[1]) = (10, 20);
        PaymentChannels.Claim[] memory cs = _claims(ids, amounts);
        cs[1].payerSignature = _voucher(ids[1], 21);
        vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
        pc.claimMany(cs);
        _assertEq(pc.getChannel(ids[0]).claimed, 0, "nothing booked");
    }

    function test_claimMany_emptyAndPastClosesAt() public {
        pc.claimMany(new PaymentChannels.Claim[](0));
        bytes32[] memory ids = new bytes32[](1);
        uint256[] memory amounts = new uint256[](1);
        ids[0] = _openEth(1 ether);
        amounts[0] = 5;
        vm.prank(payer);
        pc.startClose(ids[0]);
        vm.warp(block.timestamp + CP);
        pc.claimMany(_claims(ids, amounts));
        _assertEq(payee.balance, 0, "skipped after closesAt");
    }

    // ------------------------------------------------------------------ closeByPayee

    function test_closeByPayee_claimsRefundsAndTombstones() public {
        bytes32 id = _openEth(1 ether);
        pc.claim(id, 0.2 ether, _voucher(id, 0.2 ether));
        uint256 payerBefore = payer.balance;
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.ChannelClosed(id, 0.7 ether, 0.3 ether);
        vm.prank(payee);
        pc.closeByPayee(id, 0.7 ether, _voucher(id, 0.7 ether));
        _assertEq(payee.balance, 0.7 ether, "payee total");
        _assertEq(payer.balance - payerBefore, 0.3 ether, "refund");
        _assertEq(address(pc).balance, 0, "empty");
        _assertClosedView(id, NO_SIGNER);
    }

    function test_closeByPayee_voucherAboveDepositIsCapped() public {
        bytes32 id = _openUsd(1000);
        vm.prank(payee);
        pc.closeByPayee(id, 5000, _voucher(id, 5000));
        _assertEq(usd.balanceOf(payee), 1000, "capped");
    }

    function test_closeByPayee_staleVoucherNeedsNoSignature() public {
        bytes32 id = _openUsd(1000);
        pc.claim(id, 400, _voucher(id, 400));
        uint256 before = usd.balanceOf(payer);
        vm.prank(payee);
        pc.closeByPayee(id, 100, "");
        _assertEq(usd.balanceOf(payee), 400, "unchanged");
        _assertEq(usd.balanceOf(payer) - before, 600, "refund");
    }

    function test_closeByPayee_revert_notPayee() public {
        bytes32 id = _openEth(1 ether);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.NotPayee.selector, id, payer, payee));
        pc.closeByPayee(id, 1, _voucher(id, 1));
    }

    function test_closeByPayee_revert_badSignatureAndState() public {
        bytes32 id = _openEth(1 ether);
        vm.prank(payee);
        vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
        pc.closeByPayee(id, 10, _voucher(id, 11));
        vm.prank(payer);
        pc.startClose(id);
        vm.warp(block.timestamp + CP);
        vm.prank(payee);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChallengePeriodOver.selector, id, uint64(block.timestamp)));
        pc.closeByPayee(id, 10, _voucher(id, 10));
        pc.settle(id);
        vm.prank(payee);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelNotOpen.selector, id, PaymentChannels.Status.Closed));
        pc.closeByPayee(id, 10, _voucher(id, 10));
    }

    function test_closeByPayee_duringChallengePeriod() public {
        bytes32 id = _openEth(1 ether);
        vm.prank(payer);
        pc.startClose(id);
        vm.warp(block.timestamp + CP - 1);
        vm.prank(payee);
        pc.closeByPayee(id, 0.4 ether, _voucher(id, 0.4 ether));
        _assertEq(payee.balance, 0.4 ether, "paid");
        _assertTrue(pc.getChannel(id).status == PaymentChannels.Status.Closed, "closed");
    }

    // ------------------------------------------------------------------ cooperativeClose

    function test_cooperativeClose_byAnyone() public {
        bytes32 id = _openUsd(1000);
        pc.claim(id, 100, _voucher(id, 100));
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.ChannelClosed(id, 600, 400);
        vm.prank(other);
        pc.cooperativeClose(id, 600, _deadline(), _voucher(id, 600), _consent(id, 600));
        _assertEq(usd.balanceOf(payee), 600, "payee");
        _assertEq(usd.balanceOf(address(pc)), 0, "empty");
        _assertTrue(pc.getChannel(id).status == PaymentChannels.Status.Closed, "closed");
    }

    function test_cooperativeClose_atOrBelowClaimedNeedsNoVoucher() public {
        bytes32 id = _openEth(1 ether);
        pc.claim(id, 100, _voucher(id, 100));
        uint256 before = payer.balance;
        pc.cooperativeClose(id, 100, _deadline(), "", _consent(id, 100));
        _assertEq(payer.balance - before, 1 ether - 100, "refund");
    }

    function test_cooperativeClose_revert_invalidSignatures() public {
        bytes32 id = _openEth(1 ether);
        // consent signed by the payer, not the payee
        bytes memory payerConsent = Sig.sign(PAYER_KEY, Sig.consentDigest(id, 10, _deadline(), block.chainid, address(pc)));
        vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
        pc.cooperativeClose(id, 10, _deadline(), _voucher(id, 10), payerConsent);
        // consent for another amount
        vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
        pc.cooperativeClose(id, 10, _deadline(), _voucher(id, 10), _consent(id, 9));
        // a voucher signed as CloseConsent by the payee does not stand in for the payer's voucher
        vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
        pc.cooperativeClose(id, 10, _deadline(), _consent(id, 10), _consent(id, 10));
        // the payee's Voucher-typed signature is not a CloseConsent
        bytes memory payeeVoucher = Sig.sign(PAYEE_KEY, Sig.digest(Sig.VOUCHER, id, 10, block.chainid, address(pc)));
        vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
        pc.cooperativeClose(id, 10, _deadline(), _voucher(id, 10), payeeVoucher);
    }

    /// A consent is valid at `block.timestamp == deadline` and expired one second later.
    function test_cooperativeClose_consentDeadlineBoundary() public {
        bytes32 id = _openUsd(1000);
        uint64 deadline = uint64(block.timestamp + 600);
        bytes memory v = _voucher(id, 400);
        bytes memory c = _consentUntil(id, 400, deadline);
        vm.warp(deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ConsentExpired.selector, id, deadline, uint256(deadline) + 1));
        pc.cooperativeClose(id, 400, deadline, v, c);
        vm.warp(deadline); // the same consent in a block at the deadline itself
        pc.cooperativeClose(id, 400, deadline, v, c);
        _assertEq(usd.balanceOf(payee), 400, "closed at the deadline");
    }

    /// The deadline is part of the signed consent: moving it (e.g. to revive an expired consent)
    /// breaks the signature.
    function test_cooperativeClose_deadlineIsSigned() public {
        bytes32 id = _openUsd(1000);
        uint64 deadline = uint64(block.timestamp + 600);
        bytes memory c = _consentUntil(id, 400, deadline);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.InvalidSignature.selector, id, payee, _recover(id, 400, deadline + 3600, c)));
        pc.cooperativeClose(id, 400, deadline + 3600, _voucher(id, 400), c);
    }

    function _recover(bytes32 id, uint256 amount, uint64 deadline, bytes memory sig) internal view returns (address) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
            v := byte(0, mload(add(sig, 0x60)))
        }
        return ecrecover(Sig.consentDigest(id, amount, deadline, block.chainid, address(pc)), v, r, s);
    }

    function test_cooperativeClose_revert_notOpen() public {
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelNotOpen.selector, ZERO, PaymentChannels.Status.None));
        pc.cooperativeClose(ZERO, 0, _deadline(), "", "");
        bytes32 id = _openEth(1 ether);
        pc.cooperativeClose(id, 0, _deadline(), "", _consent(id, 0));
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelNotOpen.selector, id, PaymentChannels.Status.Closed));
        pc.cooperativeClose(id, 0, _deadline(), "", _consent(id, 0));
    }

    // ------------------------------------------------------------------ startClose / settle

    function test_startClose_setsClosesAt() public {
        bytes32 id = _openEth(1 ether);
        uint64 closesAt = uint64(block.timestamp + CP);
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.CloseStarted(id, closesAt);
        vm.prank(payer);
        pc.startClose(id);
        PaymentChannels.Channel memory c = pc.getChannel(id);
        _assertTrue(c.status == PaymentChannels.Status.Closing, "closing");
        _assertEq(c.closesAt, closesAt, "closesAt");
        _assertEq(c.challengePeriod, CP, "cp kept");
        _assertEq(c.deposit, 1 ether, "deposit kept");
    }

    function test_startClose_reverts() public {
        bytes32 id = _openEth(1 ether);
        vm.prank(payee);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.NotPayer.selector, id, payee, payer));
        pc.startClose(id);
        vm.prank(payer);
        pc.startClose(id);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelClosing.selector, id, uint64(block.timestamp + CP)));
        pc.startClose(id);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelNotOpen.selector, ZERO, PaymentChannels.Status.None));
        pc.startClose(ZERO);
        vm.warp(block.timestamp + CP);
        pc.settle(id);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelNotOpen.selector, id, PaymentChannels.Status.Closed));
        pc.startClose(id);
    }

    function test_settle_refundsPayerAfterChallengePeriod() public {
        bytes32 id = _openUsd(1000);
        pc.claim(id, 300, _voucher(id, 300));
        vm.prank(payer);
        pc.startClose(id);
        uint64 closesAt = uint64(block.timestamp + CP);
        vm.warp(closesAt - 1);
        vm.expectRevert(
            abi.encodeWithSelector(PaymentChannels.ChallengePeriodNotOver.selector, id, closesAt, uint256(closesAt - 1))
        );
        pc.settle(id);
        vm.warp(closesAt);
        uint256 before = usd.balanceOf(payer);
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.ChannelClosed(id, 300, 700);
        vm.prank(other);
        pc.settle(id);
        _assertEq(usd.balanceOf(payer) - before, 700, "refund");
        _assertEq(usd.balanceOf(address(pc)), 0, "empty");
        _assertClosedView(id, NO_SIGNER);
    }

    function test_settle_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelNotClosing.selector, ZERO, PaymentChannels.Status.None));
        pc.settle(ZERO);
        bytes32 id = _openEth(1 ether);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelNotClosing.selector, id, PaymentChannels.Status.Open));
        pc.settle(id);
        vm.prank(payer);
        pc.startClose(id);
        vm.warp(block.timestamp + CP);
        pc.settle(id);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelNotClosing.selector, id, PaymentChannels.Status.Closed));
        pc.settle(id);
    }

    function test_settle_fullyClaimedChannelRefundsNothing() public {
        bytes32 id = _openEth(100);
        pc.claim(id, 100, _voucher(id, 100));
        vm.prank(payer);
        pc.startClose(id);
        vm.warp(block.timestamp + CP);
        uint256 before = payer.balance;
        pc.settle(id);
        _assertEq(payer.balance, before, "no refund");
    }

    // ------------------------------------------------------------------ views

    function test_eip712Domain() public view {
        (bytes1 fields, string memory name, string memory version, uint256 chainId, address verifyingContract, bytes32 salt, uint256[] memory ext) =
            pc.eip712Domain();
        _assertTrue(fields == hex"0f", "fields: name, version, chainId, verifyingContract");
        _assertTrue(keccak256(bytes(name)) == keccak256("PaymentChannels"), "name");
        _assertTrue(keccak256(bytes(version)) == keccak256("2"), "version");
        _assertEq(chainId, block.chainid, "chainId");
        _assertTrue(verifyingContract == address(pc) && salt == ZERO && ext.length == 0, "rest");
    }

    function test_typehashesAndDigestsMatchProtocol() public view {
        // the type strings as PROTOCOL.md writes them, not the contract's or Sig's constants
        _assertTrue(pc.VOUCHER_TYPEHASH() == keccak256("Voucher(bytes32 channelId,uint256 cumulativeAmount)"), "voucher");
        _assertTrue(
            pc.RECEIPT_TYPEHASH()
                == keccak256("Receipt(bytes32 channelId,uint256 cumulativeAmount,uint256 amount,bytes32 taskId)"),
            "receipt"
        );
        _assertTrue(
            pc.CLOSE_CONSENT_TYPEHASH() == keccak256("CloseConsent(bytes32 channelId,uint256 cumulativeAmount,uint64 deadline)"),
            "consent"
        );
        _assertTrue(
            pc.CLOSE_REQUEST_TYPEHASH() == keccak256("CloseRequest(bytes32 channelId,uint256 cumulativeAmount)"),
            "close request"
        );
        _assertTrue(pc.ACCESS_TYPEHASH() == keccak256("Access(bytes32 channelId,uint64 expires)"), "access");
        bytes32 id = keccak256("x");
        _assertTrue(pc.hashVoucher(id, 5) == Sig.digest(Sig.VOUCHER, id, 5, block.chainid, address(pc)), "voucher digest");
        _assertTrue(
            pc.hashCloseConsent(id, 5, 1234) == Sig.consentDigest(id, 5, 1234, block.chainid, address(pc)),
            "consent digest"
        );
        _assertTrue(pc.hashCloseConsent(id, 5, 1234) != pc.hashCloseConsent(id, 5, 1235), "deadline is signed");
    }

    /// @dev A closed channel reads as Closed with its payee (and voucher signer); the rest is zero.
    function _assertClosedView(bytes32 id, address voucherSigner) internal view {
        PaymentChannels.Channel memory c = pc.getChannel(id);
        _assertTrue(c.status == PaymentChannels.Status.Closed, "status closed");
        _assertTrue(c.payee == payee && c.voucherSigner == voucherSigner, "payee and voucher signer kept");
        _assertTrue(c.payer == address(0) && c.token == address(0), "payer, token cleared");
        _assertEq(c.deposit + c.claimed + c.challengePeriod + c.closesAt, 0, "amounts and times cleared");
    }

    function test_getChannel_unknownIsZero() public view {
        PaymentChannels.Channel memory c = pc.getChannel(keccak256("nope"));
        _assertTrue(c.status == PaymentChannels.Status.None && c.payer == address(0), "none");
    }

    // ------------------------------------------------------------------ pull-payment fallback

    function test_revertingPayee_claimIsDeferredThenWithdrawn() public {
        RevertingReceiver rr = new RevertingReceiver();
        vm.prank(payer);
        bytes32 id = pc.open{value: 1 ether}(address(rr), address(0), 1 ether, CP, ZERO, NO_SIGNER);
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.PaymentDeferred(address(rr), address(0), 100);
        pc.claim(id, 100, _voucher(id, 100));
        _assertEq(pc.owed(address(rr), address(0)), 100, "owed");
        _assertEq(address(pc).balance, 1 ether, "still held");
        // the rejecting payee sends its money elsewhere
        address sink = address(0x5151);
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.Withdrawn(address(rr), address(0), sink, 100);
        rr.exec(address(pc), 0, abi.encodeCall(PaymentChannels.withdraw, (address(0), sink)));
        _assertEq(sink.balance, 100, "withdrawn");
        _assertEq(pc.owed(address(rr), address(0)), 0, "cleared");
    }

    function test_revertingPayee_doesNotLockPayerRefund() public {
        RevertingReceiver rr = new RevertingReceiver();
        vm.prank(payer);
        bytes32 id = pc.open{value: 1 ether}(address(rr), address(0), 1 ether, CP, ZERO, NO_SIGNER);
        uint256 before = payer.balance;
        rr.exec(address(pc), 0, abi.encodeCall(PaymentChannels.closeByPayee, (id, 0.25 ether, _voucher(id, 0.25 ether))));
        _assertEq(payer.balance - before, 0.75 ether, "payer refunded");
        _assertEq(pc.owed(address(rr), address(0)), 0.25 ether, "payee owed");
        _assertEq(address(pc).balance, 0.25 ether, "held for payee");
    }

    function test_revertingPayer_doesNotLockPayeePayout() public {
        RevertingReceiver rr = new RevertingReceiver();
        vm.deal(address(rr), 1 ether);
        bytes32 id = abi.decode(
            rr.exec(address(pc), 1 ether, abi.encodeCall(PaymentChannels.open, (payee, address(0), 1 ether, CP, ZERO, NO_SIGNER))),
            (bytes32)
        );
        // a contract payer cannot sign vouchers; the payee closes with what it has (nothing more)
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.PaymentDeferred(address(rr), address(0), 1 ether);
        vm.prank(payee);
        pc.closeByPayee(id, 0, "");
        _assertEq(pc.owed(address(rr), address(0)), 1 ether, "payer owed");
        // withdrawing to itself still fails while it rejects ETH: funds stay owed
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.EthTransferFailed.selector, address(rr), 1 ether));
        rr.exec(address(pc), 0, abi.encodeCall(PaymentChannels.withdraw, (address(0), address(rr))));
        rr.setRejecting(false);
        rr.exec(address(pc), 0, abi.encodeCall(PaymentChannels.withdraw, (address(0), address(rr))));
        _assertEq(address(rr).balance, 1 ether, "payer got it back");
    }

    function test_revertingPayer_settleDefers() public {
        RevertingReceiver rr = new RevertingReceiver();
        vm.deal(address(rr), 1 ether);
        bytes32 id = abi.decode(
            rr.exec(address(pc), 1 ether, abi.encodeCall(PaymentChannels.open, (payee, address(0), 1 ether, CP, ZERO, NO_SIGNER))),
            (bytes32)
        );
        rr.exec(address(pc), 0, abi.encodeCall(PaymentChannels.startClose, (id)));
        vm.warp(block.timestamp + CP);
        pc.settle(id);
        _assertEq(pc.owed(address(rr), address(0)), 1 ether, "owed");
        _assertTrue(pc.getChannel(id).status == PaymentChannels.Status.Closed, "closed");
    }

    function test_blockedTokenPayee_deferred() public {
        FalseReturnToken t = new FalseReturnToken();
        t.mint(payer, 1000);
        vm.prank(payer);
        t.approve(address(pc), 1000);
        vm.prank(payer);
        bytes32 id = pc.open(payee, address(t), 1000, CP, ZERO, NO_SIGNER);
        t.setBlocked(payee, true);
        vm.prank(payee);
        pc.closeByPayee(id, 300, _voucher(id, 300));
        _assertEq(t.balanceOf(payer), 700, "payer refunded");
        _assertEq(pc.owed(payee, address(t)), 300, "payee owed");
        t.setBlocked(payee, false);
        vm.prank(payee);
        pc.withdraw(address(t), payee);
        _assertEq(t.balanceOf(payee), 300, "withdrawn");
    }

    function test_withdraw_revert_nothingToWithdraw() public {
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.NothingToWithdraw.selector, address(this), address(0)));
        pc.withdraw(address(0), address(this));
    }

    // ------------------------------------------------------------------ re-entrancy

    function _openReentrant(ReentrantToken t, uint256 amount) internal returns (bytes32 id) {
        t.mint(payer, amount);
        vm.prank(payer);
        t.approve(address(pc), amount);
        vm.prank(payer);
        id = pc.open(payee, address(t), amount, CP, _salt(), NO_SIGNER);
    }

    function test_reentrancy_closeOfAnotherChannelDuringPayoutKeepsBooks() public {
        ReentrantToken t = new ReentrantToken();
        bytes32 id = _openReentrant(t, 1000);
        bytes32 id2 = _openReentrant(t, 1000);
        // no lock: while cooperativeClose pays out, the token closes another channel; both closes
        // see finished books, so each channel splits exactly once
        t.arm(address(pc), abi.encodeCall(PaymentChannels.cooperativeClose, (id2, 0, _deadline(), "", _consent(id2, 0))));
        pc.cooperativeClose(id, 400, _deadline(), _voucher(id, 400), _consent(id, 400));
        _assertTrue(t.attempted() && t.reentrySucceeded(), "re-entrant close ran");
        _assertTrue(pc.getChannel(id2).status == PaymentChannels.Status.Closed, "other channel closed");
        // the hook (a nested close with its own transfer) may not fit the first payout's budget:
        // then that payout is deferred and the hook runs on the second; either way the books hold
        uint256 payeeOwed = pc.owed(payee, address(t));
        uint256 payerOwed = pc.owed(payer, address(t));
        _assertEq(t.balanceOf(payee) + payeeOwed, 400, "payee paid once");
        _assertEq(t.balanceOf(payer) + payerOwed, 600 + 1000, "payer refunded both");
        _assertEq(t.balanceOf(address(pc)), payeeOwed + payerOwed, "the contract holds exactly what it owes");
    }

    function test_reentrancy_reclosingTheSameChannelDuringPayoutFails() public {
        ReentrantToken t = new ReentrantToken();
        bytes32 id = _openReentrant(t, 1000);
        t.arm(address(pc), abi.encodeCall(PaymentChannels.cooperativeClose, (id, 1000, _deadline(), _voucher(id, 1000), _consent(id, 1000))));
        vm.prank(payee);
        pc.closeByPayee(id, 400, _voucher(id, 400));
        _assertTrue(t.attempted() && !t.reentrySucceeded(), "re-close refused");
        _assertTrue(
            t.reentryReturnHash()
                == keccak256(abi.encodeWithSelector(PaymentChannels.ChannelNotOpen.selector, id, PaymentChannels.Status.Closed)),
            "already closed when the payout ran"
        );
        _assertEq(t.balanceOf(payee), 400, "payee");
        _assertEq(t.balanceOf(payer), 600, "payer");
    }

    function test_reentrancy_claimReplayDuringPayoutPaysNothing() public {
        ReentrantToken t = new ReentrantToken();
        bytes32 id = _openReentrant(t, 1000);
        bytes memory v = _voucher(id, 400);
        t.arm(address(pc), abi.encodeCall(PaymentChannels.claim, (id, 400, v)));
        pc.claim(id, 400, v);
        _assertTrue(t.attempted() && !t.reentrySucceeded(), "replay failed");
        _assertTrue(
            t.reentrySelector() == PaymentChannels.NothingToClaim.selector, "state was already written"
        );
        _assertEq(t.balanceOf(payee), 400, "paid once");
    }

    function test_reentrancy_depositDuringPullReverts() public {
        ReentrantToken t = new ReentrantToken();
        t.mint(payer, 1000);
        t.mint(address(t), 1000);
        t.approveFromSelf(address(pc), 1000);
        vm.prank(payer);
        t.approve(address(pc), 1000);
        // the token hook opens a second channel (as itself) while the first open pulls
        t.arm(address(pc), abi.encodeCall(PaymentChannels.open, (payee, address(t), 500, CP, ZERO, NO_SIGNER)));
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.FeeOnTransferToken.selector, address(t), 1000, 1500));
        pc.open(payee, address(t), 1000, CP, ZERO, NO_SIGNER);
    }
}

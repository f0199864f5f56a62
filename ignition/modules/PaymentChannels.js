// Hardhat Ignition module: deploys the single PaymentChannels contract (no constructor arguments;
// the EIP-712 domain is name "PaymentChannels", version "2", the chain id and this address).
//   npx hardhat ignition deploy ignition/modules/PaymentChannels.js --network sepolia
//   PIECEWORK_RPC_URL=http://127.0.0.1:PORT npx hardhat ignition deploy ignition/modules/PaymentChannels.js --network localhost
import { buildModule } from "@nomicfoundation/hardhat-ignition/modules";

export default buildModule("PaymentChannelsModule", (m) => {
  const paymentChannels = m.contract("PaymentChannels");
  return { paymentChannels };
});
